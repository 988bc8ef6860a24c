/* FULLY_CONNECTED, int8, EP_SPARSE_DEAD weights (see ep_sparse_s8.h): portable C. */
#include "ep_sparse_rows.h"

void ep_fully_connected_s8_dead(EP_FULLY_CONNECTED_S8_SPARSE_ARGS)
{
    ep_sparse_fc(quant, batches, input, filter, output, scratch, ep_sparse_rows_dead, 0);
}
