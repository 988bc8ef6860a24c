"""On-device adaptation: the trainable region of a deployed int8 model, exact budget accounting,
NEq velocities, neuron selectors and the training loop (`--device sim` here; the device later).

    from edgeprune.adapt.region import load_region
    from edgeprune.adapt.budget import CostModel, Selection
"""
