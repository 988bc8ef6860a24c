/* SGD step on the selected output channels of one layer, float32. Conventions in ep_train_f32.h. */
#include <stddef.h>

#include "ep_kernels.h"

/* One parameter: the update of torch.optim.SGD with dampening 0. Separate multiplies and adds
 * (C99 does not contract them by default), in torch's order. */
static float sgd_step(const ep_sgd_params_t *sgd, float p, float g, float *buf)
{
    float d = g;
    if (sgd->weight_decay != 0.0f) {
        d = d + sgd->weight_decay * p;
    }
    if (sgd->momentum != 0.0f) {
        *buf = sgd->momentum * *buf + d; /* a zero buffer makes step 1 equal torch's buf = d */
        d = *buf;
    }
    return p - sgd->lr * d;
}

void ep_sgd_update_f32(const ep_sgd_params_t *sgd, const ep_param_layout_t *layout, const int32_t *channels,
                       int32_t n_channels, float *weights, const float *grad_weights, float *momentum_weights,
                       float *bias, const float *grad_bias, float *momentum_bias)
{
    const int32_t size = layout->channel_size;
    const int32_t use_momentum = sgd->momentum != 0.0f;
    if (!channels) {
        n_channels = layout->channels;
    }
    for (int32_t j = 0; j < n_channels; ++j) {
        const int32_t oc = channels ? channels[j] : j;
        float *w = &weights[oc * layout->channel_stride];
        const float *g = &grad_weights[j * size];
        float *buf = use_momentum ? &momentum_weights[j * size] : NULL;
        for (int32_t k = 0; k < size; ++k) {
            float *p = &w[k * layout->element_stride];
            *p = sgd_step(sgd, *p, g[k], buf ? &buf[k] : NULL);
        }
        if (bias) {
            bias[oc] = sgd_step(sgd, bias[oc], grad_bias[j], use_momentum ? &momentum_bias[j] : NULL);
        }
    }
}
