"""Pure tensor functions: the projection kernel and the norms of affine layers."""

from l1inf_lightning.functional.layer_projection import ModuleProjector, project_module_
from l1inf_lightning.functional.norms import (
    AFFINE_TYPES,
    HALF_DTYPES,
    check_affine,
    compute_dtype,
    dead_neurons,
    is_affine,
    l1inf_norm,
    load_neuron_vectors_,
    neuron_l1_norms,
    neuron_vectors,
    sparsity_rate,
)
from l1inf_lightning.functional.projection import (
    BACKENDS,
    all_finite,
    check_radius,
    compile_kernel,
    project_l1_ball,
    project_l1_ball_,
    projection_backend,
)

__all__ = [
    "AFFINE_TYPES",
    "BACKENDS",
    "HALF_DTYPES",
    "ModuleProjector",
    "all_finite",
    "check_affine",
    "check_radius",
    "compile_kernel",
    "compute_dtype",
    "dead_neurons",
    "is_affine",
    "l1inf_norm",
    "load_neuron_vectors_",
    "neuron_l1_norms",
    "neuron_vectors",
    "project_l1_ball",
    "project_l1_ball_",
    "project_module_",
    "projection_backend",
    "sparsity_rate",
]
