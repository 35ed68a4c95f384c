r"""Rademacher-complexity and generalization bounds for L1,inf-normalized networks, as pure scalar functions.

The formulas are those of Wen, Xu, Zheng, Yang and Wang, "Sparse deep neural networks using
:math:`L_{1,\infty}`-weight normalization", Statistica Sinica 31 (2021). A network
:math:`f = T_{k+1} \circ \sigma \circ T_k \circ \cdots \circ \sigma \circ T_1` has :math:`k` hidden layers, each with
:math:`\|\tilde V_\ell\|_{1,\infty} \le c`; :math:`\gamma` is the Lipschitz constant of :math:`\sigma`
(:func:`lipschitz_constant`), :math:`n` the sample size, :math:`m_1` the input dimension and :math:`m_2` the number of
classes. Every bound shares the bracket

.. math::
    C(c, k, \gamma, m_1) = \sqrt{(k+1)\log 16}\left(\sum_{\ell=0}^{k}(\gamma c)^\ell + (\gamma c)^k\right)
    + (\gamma c)^k\sqrt{2\log(2m_1)},

computed once by :func:`complexity_term`.

**Inputs must lie in** :math:`[-1, 1]^{m_1}`. All theorems assume it. Data with :math:`s = \max_i \|x_i\|_\infty > 1`
must be rescaled by the caller: the net :math:`f` on :math:`x` equals the net :math:`f'` on :math:`x / s` whose first
layer has weights :math:`s W_1` and the same bias, so the bounds apply to :math:`f'` with the first layer's
:math:`L_{1,\infty}` norm measured on :math:`(b_1, s W_1)`; :func:`rescaled_l1inf_norm` computes it. When
:math:`s \le 1` the data already lie in the cube and the norm is used as measured (the conservative choice: shrinking
it would only hold for data no larger than the training maximum). The caller then passes the largest of the rescaled
first-layer norm and the other hidden layers' norms as ``c``.

``c = math.inf`` (or ``"inf"``, as YAML and the command line write it) is the unconstrained baseline: every bound is
then ``inf`` for ``k >= 1``, while for ``k = 0`` (no hidden layer) :math:`(\gamma c)^0 = 1` and the bound is finite.
A zero factor (``o = 0``, ``rho = 0``) makes its term zero even when ``c = inf``: the class then holds only the zero
function (or the loss ignores it), so the bound is 0 for every finite ``c`` and we keep that limit instead of
returning ``nan``.
"""

from l1inf_lightning.functional.bounds.classification import (
    classification_generalization_bound_fixed_output,
    cross_entropy_generalization_bound,
)
from l1inf_lightning.functional.bounds.complexity import (
    asymptotic_depth_factor,
    complexity_term,
    depth_regime,
    lipschitz_constant,
    output_sup_bound,
    rademacher_bound,
)
from l1inf_lightning.functional.bounds.measured import network_bounds, rescaled_l1inf_norm
from l1inf_lightning.functional.bounds.regression import (
    generalization_bound_fixed_output,
    mae_generalization_bound,
    mse_generalization_bound,
)

__all__ = [
    "asymptotic_depth_factor",
    "classification_generalization_bound_fixed_output",
    "complexity_term",
    "cross_entropy_generalization_bound",
    "depth_regime",
    "generalization_bound_fixed_output",
    "lipschitz_constant",
    "mae_generalization_bound",
    "mse_generalization_bound",
    "network_bounds",
    "output_sup_bound",
    "rademacher_bound",
    "rescaled_l1inf_norm",
]
