"""Selective state-space (Mamba / S6) blocks in JAX, for sequences and for images.

The selective SSM (Gu & Dao, "Mamba", 2023) is a linear recurrence whose coefficients depend on the input. Per
channel ``e`` of the inner width ``E`` it keeps a state ``h`` of ``N`` numbers and, for ``t = 1..L``::

    Delta_t = softplus(W_dt x_t + b_dt)                 [E]     input-dependent step size
    B_t, C_t = W_B x_t, W_C x_t                         [N]     input-dependent input / output maps
    A = -exp(A_log)                                     [E, N]  diagonal, strictly negative: a stable decay
    A_bar_t = exp(Delta_t A)                            [E, N]  zero-order-hold discretisation of A
    B_bar_t x_t = Delta_t B_t x_t                       [E, N]  (Euler discretisation of B, as Mamba uses)
    h_t = A_bar_t * h_{t-1} + B_bar_t x_t               [E, N]
    y_t = C_t . h_t + D * x_t                           [E]

Why it is useful here: a large ``Delta`` resets the state and focuses on the current token, a small one carries
context over long distances, so one block has an input-dependent receptive field as long as the whole sequence
at a cost linear in ``L`` (attention is quadratic). For a flattened 128 x 128 feature map that is 16 k tokens.

Why ``jax.lax.associative_scan``: the recurrence ``h_t = a_t h_{t-1} + b_t`` is a composition of affine maps,
which is associative: ``(a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)``. A parallel prefix scan evaluates it in
``O(log L)`` sequential steps (``O(L)`` work), which XLA maps onto vector units / TPU cores, instead of ``L``
dependent steps of a ``lax.scan``. The price is memory: the ``[B, L, E, N]`` discretised tensors are materialised
(the CUDA kernel of the paper avoids that by fusing the scan in SRAM; we rely on XLA). The gradient is a
hand-written VJP that saves only the inputs and runs the adjoint recurrence as a reverse associative scan (see
:func:`selective_scan`), as the paper's kernel recomputes states in its backward pass. :func:`selective_scan_reference`
is the plain sequential recurrence, kept for tests and as the definition. Forward-mode differentiation (``jvp``) of
:func:`selective_scan` is not supported (a ``custom_vjp`` restriction); use the reference for that.

Blocks:

* :class:`SelectiveSSM`: causal depthwise conv -> SiLU -> (Delta, B, C) projections -> selective scan, on K
  stacked sequences ``[K, B, L, E]`` (one parameter set per scan direction).
* :class:`Mamba`: input projection to ``(x, z)`` of width ``E = expand * d_model``, the selective SSM on ``x``
  in each scan direction, gate ``y * silu(z)``, output projection back to ``d_model``.
* :class:`ResMambaBlock`: ``x + Mamba(LayerNorm(x))`` on an image ``[B, H, W, C]`` flattened to ``H * W`` tokens
  in the scan orders named in ``scans`` (see :data:`SCANS`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

#: A scan order: ``(to_sequence, from_sequence)``, two maps ``[B, L, E] -> [B, L, E]``, each the other's inverse.
Order = tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]

#: Image scan orders understood by :func:`image_scan_order` and :class:`ResMambaBlock`.
SCANS: tuple[str, ...] = ("raster", "raster_reverse", "column", "column_reverse")


# ----------------------------------------------------------------------------------------------------------------------
# The scan
# ----------------------------------------------------------------------------------------------------------------------


def _check_scan_shapes(u: jax.Array, delta: jax.Array, a: jax.Array, b: jax.Array, c: jax.Array) -> None:
    e, n = a.shape
    if u.shape != delta.shape or u.shape[-1] != e:
        raise ValueError(f"u and delta must be [..., L, {e}], got {u.shape} and {delta.shape}")
    if b.shape != u.shape[:-1] + (n,) or c.shape != b.shape:
        raise ValueError(f"B and C must be {u.shape[:-1] + (n,)}, got {b.shape} and {c.shape}")


def _discretise(u: jax.Array, delta: jax.Array, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(A_bar, B_bar x)``, both ``[..., L, E, N]``."""
    a_bar = jnp.exp(delta[..., None] * a)
    bx = (delta * u)[..., None] * b[..., None, :]
    return a_bar, bx


def _combine(left: tuple[jax.Array, jax.Array], right: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    # Compose two affine maps h -> a h + b: first `left`, then `right`.
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


#: Ways to evaluate the linear recurrence inside :func:`selective_scan`; identical results up to rounding.
SCAN_METHODS: tuple[str, ...] = ("associative", "sequential")


def linear_recurrence(a: jax.Array, b: jax.Array, axis: int, *, reverse: bool = False, method: str = "associative"):
    """All ``h_t = a_t h_{t-1} + b_t`` along ``axis`` from ``h = 0`` (``reverse``: ``h_t = a_t h_{t+1} + b_t``).

    ``method="associative"``: ``jax.lax.associative_scan`` with the affine-map composition, ``O(log L)`` depth,
    the choice for accelerators. ``method="sequential"``: ``jax.lax.scan`` one step at a time; on CPU it is an order
    of magnitude faster (one cache-friendly pass instead of ~2 log L strided passes over ``[L, E, N]``) and compiles
    in a fraction of the time, so CPU runs (tests, ``:tiny`` experiments) may prefer it.
    """
    if method == "associative":
        return jax.lax.associative_scan(_combine, (a, b), reverse=reverse, axis=axis)[1]
    if method != "sequential":
        raise ValueError(f"unknown scan method {method!r}; choose from {SCAN_METHODS}")

    def step(h: jax.Array, ab: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        h = ab[0] * h + ab[1]
        return h, h

    a0, b0 = jnp.moveaxis(a, axis, 0), jnp.moveaxis(b, axis, 0)
    _, h = jax.lax.scan(step, jnp.zeros_like(b0[0]), (a0, b0), reverse=reverse)
    return jnp.moveaxis(h, 0, axis)


def _states(u: jax.Array, delta: jax.Array, a: jax.Array, b: jax.Array, method: str) -> tuple[jax.Array, jax.Array]:
    """``(A_bar, h)``: discretised decays and all hidden states ``h_t``, both ``[..., L, E, N]``."""
    a_bar, bx = _discretise(u, delta, a, b)
    return a_bar, linear_recurrence(a_bar, bx, u.ndim - 2, method=method)


def _shift(x: jax.Array, axis: int, step: int) -> jax.Array:
    """``x`` moved by ``step`` (+1 or -1) along ``axis``, zero-filled: ``out[t] = x[t - step]``."""
    n = x.shape[axis]
    zero = jnp.zeros_like(jax.lax.slice_in_dim(x, 0, 1, axis=axis))
    if step == 1:
        return jnp.concatenate([zero, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
    return jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), zero], axis=axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _scan_core(u: jax.Array, delta: jax.Array, a: jax.Array, b: jax.Array, c: jax.Array, method: str) -> jax.Array:
    _, h = _states(u, delta, a, b, method)
    return jnp.einsum("...len,...ln->...le", h, c)


def _scan_core_fwd(u, delta, a, b, c, method):
    # Save only the inputs; the states are recomputed in the backward pass (one more scan, far less memory).
    return _scan_core(u, delta, a, b, c, method), (u, delta, a, b, c)


def _scan_core_bwd(method, residuals, dy):
    u, delta, a, b, c = residuals
    axis = u.ndim - 2  # the L axis, in [..., L, E] and in [..., L, E, N] alike
    a_bar, h = _states(u, delta, a, b, method)
    # Adjoint of h_t: g_t = C_t dy_t + A_bar_{t+1} g_{t+1}, the same linear recurrence run backwards in time.
    local = dy[..., None] * c[..., None, :]
    g = linear_recurrence(_shift(a_bar, axis, -1), local, axis, reverse=True, method=method)
    da_bar = g * _shift(h, axis, 1)  # d/dA_bar_t of A_bar_t h_{t-1}
    gb = jnp.einsum("...len,...ln->...le", g, b)  # sum_n g_t[e, n] B_t[n]
    d_delta_a = da_bar * a_bar  # chain rule through exp(Delta A)
    d_delta = jnp.einsum("...len,en->...le", d_delta_a, a) + gb * u
    du = gb * delta
    da = jnp.sum(d_delta_a * delta[..., None], axis=tuple(range(u.ndim - 1)))
    db = jnp.einsum("...len,...le->...ln", g, delta * u)
    dc = jnp.einsum("...le,...len->...ln", dy, h)
    return du, d_delta, da, db, dc


_scan_core.defvjp(_scan_core_fwd, _scan_core_bwd)


@functools.partial(jax.jit, static_argnames=("method",))
def selective_scan(
    u: jax.Array,
    delta: jax.Array,
    a: jax.Array,
    b: jax.Array,
    c: jax.Array,
    d: jax.Array | None = None,
    *,
    method: str = "associative",
) -> jax.Array:
    """Selective scan, by default as a parallel prefix scan (``jax.lax.associative_scan``), zero initial state.

    Args:
      u: ``[..., L, E]`` input sequence.
      delta: ``[..., L, E]`` positive step sizes (already through softplus).
      a: ``[E, N]`` continuous-time diagonal state matrix (negative for a stable recurrence).
      b: ``[..., L, N]`` input maps ``B_t``.
      c: ``[..., L, N]`` output maps ``C_t``.
      d: optional ``[E]`` skip weight.
      method: how the recurrence is evaluated, one of :data:`SCAN_METHODS` (see :func:`linear_recurrence`).

    Returns:
      ``y [..., L, E]`` with ``y_t = C_t . h_t + D u_t`` and ``h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t``.

    Gradients (reverse mode only) come from a hand-written VJP: the adjoint of a linear recurrence is the same
    recurrence backwards in time, ``g_t = C_t dy_t + A_bar_{t+1} g_{t+1}``, so the backward pass is one reverse
    scan plus a recomputation of the states. Differentiating through the associative scan's slicing tree instead
    stores every level and compiles to a much larger program (seconds per block on CPU).

    Jitted on its own so that eager (op-by-op) callers compile the scan once instead of each of its many small
    slicing ops; inside an outer ``jit`` it is simply inlined.
    """
    _check_scan_shapes(u, delta, a, b, c)
    if method not in SCAN_METHODS:
        raise ValueError(f"unknown scan method {method!r}; choose from {SCAN_METHODS}")
    y = _scan_core(u, delta, a, b, c, method)
    return y if d is None else y + u * d


def selective_scan_reference(
    u: jax.Array,
    delta: jax.Array,
    a: jax.Array,
    b: jax.Array,
    c: jax.Array,
    d: jax.Array | None = None,
) -> jax.Array:
    """The same recurrence as :func:`selective_scan`, one step at a time with ``jax.lax.scan`` (the definition).

    Shapes as in :func:`selective_scan`. ``O(L)`` sequential steps but only an ``[..., E, N]`` state in memory.
    """
    _check_scan_shapes(u, delta, a, b, c)
    axis = u.ndim - 2
    xs = tuple(jnp.moveaxis(x, axis, 0) for x in (u, delta, b, c))  # time first

    def step(h: jax.Array, inputs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        u_t, delta_t, b_t, c_t = inputs  # [..., E], [..., E], [..., N], [..., N]
        h = jnp.exp(delta_t[..., None] * a) * h + (delta_t * u_t)[..., None] * b_t[..., None, :]
        return h, jnp.einsum("...en,...n->...e", h, c_t)

    h0 = jnp.zeros(u.shape[:axis] + a.shape, jnp.result_type(u, delta, a, b))
    _, y = jax.lax.scan(step, h0, xs)
    y = jnp.moveaxis(y, 0, axis)
    return y if d is None else y + u * d


# ----------------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------------


def _dt_bias_init(dt_min: float, dt_max: float, dt_floor: float = 1e-4) -> nnx.Initializer:
    """Bias of the Delta projection so that ``softplus(bias)`` is log-uniform in ``[dt_min, dt_max]``.

    Steps spread over two decades give the channels memories from ~10 to ~1000 tokens at initialisation.
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        log_dt = jax.random.uniform(key, shape, jnp.float32, math.log(dt_min), math.log(dt_max))
        dt = jnp.maximum(jnp.exp(log_dt), dt_floor)
        return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)  # softplus^{-1}(dt)

    return init


def _a_log_init(d_inner: int, d_state: int) -> jax.Array:
    # S4D-real initialisation A[e, n] = -(n + 1): a range of decay rates per channel.
    return jnp.log(jnp.broadcast_to(jnp.arange(1, d_state + 1, dtype=jnp.float32), (d_inner, d_state)))


def _causal_depthwise_conv(u: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """``u [..., L, E]``, ``kernel [K, E]``, ``bias [E]``: ``out_t = bias + sum_k kernel[k] * u_{t - (K - 1) + k}``."""
    k, length = kernel.shape[0], u.shape[-2]
    padded = jnp.pad(u, [(0, 0)] * (u.ndim - 2) + [(k - 1, 0), (0, 0)])
    return sum(padded[..., i : i + length, :] * kernel[i] for i in range(k)) + bias


class SelectiveSSM(nnx.Module):
    """Causal depthwise conv -> SiLU -> input-dependent (Delta, B, C) -> selective scan, for K scan directions.

    ``u [K, B, L, E] -> y [K, B, L, E]``: sequence ``k`` is processed by its own parameters, causal in ``L`` (token
    ``t`` sees tokens ``<= t``). Per direction: depthwise conv ``conv_kernel [d_conv, E]`` + ``conv_bias [E]``,
    ``x_proj [E, dt_rank + 2N]`` (no bias) giving ``(dt, B, C)``, ``dt_kernel [dt_rank, E]`` + ``dt_bias [E]``
    giving ``Delta = softplus(dt dt_kernel + dt_bias)``, ``A_log [E, N]`` and ``D [E]``; every parameter carries a
    leading ``K`` axis. Delta goes through a low-rank bottleneck (``dt_rank``) as in Mamba: the step size needs
    little capacity and a full ``E x E`` map would dominate the count.

    The K directions are stacked and run as one ``vmap``-ed scan rather than K separate ones: XLA then compiles
    a single scan per block (the scan dominates compile time on CPU) and runs it on K times larger arrays.
    """

    def __init__(
        self,
        d_inner: int,
        *,
        d_state: int = 16,
        d_conv: int = 4,
        dt_rank: int | None = None,
        num_directions: int = 1,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        scan_method: str = "associative",
        rngs: nnx.Rngs,
    ):
        if scan_method not in SCAN_METHODS:
            raise ValueError(f"unknown scan method {scan_method!r}; choose from {SCAN_METHODS}")
        k, e, n = num_directions, d_inner, d_state
        self.scan_method = scan_method
        r = dt_rank if dt_rank is not None else max(1, math.ceil(d_inner / 32))
        self.d_state = d_state
        self.dt_rank = r
        conv_bound = 1.0 / math.sqrt(d_conv)  # fan-in of one depthwise filter
        dt_bound = 1.0 / math.sqrt(r)
        self.conv_kernel = nnx.Param(
            jax.random.uniform(rngs.params(), (k, d_conv, e), jnp.float32, -conv_bound, conv_bound)
        )
        self.conv_bias = nnx.Param(jnp.zeros((k, e), jnp.float32))
        self.x_proj = nnx.Param(
            nnx.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))(rngs.params(), (k, e, r + 2 * n))
        )
        self.dt_kernel = nnx.Param(jax.random.uniform(rngs.params(), (k, r, e), jnp.float32, -dt_bound, dt_bound))
        self.dt_bias = nnx.Param(_dt_bias_init(dt_min, dt_max)(rngs.params(), (k, e)))
        self.A_log = nnx.Param(jnp.broadcast_to(_a_log_init(e, n), (k, e, n)))
        self.D = nnx.Param(jnp.ones((k, e), jnp.float32))

    def _single(self, params: tuple[jax.Array, ...], u: jax.Array) -> jax.Array:
        conv_kernel, conv_bias, x_proj, dt_kernel, dt_bias, a_log, d = params
        u = nnx.silu(_causal_depthwise_conv(u, conv_kernel, conv_bias))
        dt, b, c = jnp.split(u @ x_proj, [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
        delta = jax.nn.softplus(dt @ dt_kernel + dt_bias)  # [B, L, E] > 0
        return selective_scan(u, delta, -jnp.exp(a_log), b, c, d, method=self.scan_method)  # A = -exp(A_log) < 0

    def __call__(self, u: jax.Array) -> jax.Array:
        names = ("conv_kernel", "conv_bias", "x_proj", "dt_kernel", "dt_bias", "A_log", "D")
        params = tuple(getattr(self, name)[...] for name in names)
        if u.shape[0] != params[0].shape[0]:
            raise ValueError(f"expected {params[0].shape[0]} stacked directions, got input of shape {u.shape}")
        return jax.vmap(self._single)(params, u)


def _identity(x: jax.Array) -> jax.Array:
    return x


def _flip(x: jax.Array) -> jax.Array:
    return jnp.flip(x, axis=-2)


class Mamba(nnx.Module):
    """Mamba block: ``out_proj(SSM(x) * silu(z))`` with ``(x, z) = in_proj(u)``, ``[B, L, d_model] -> [B, L, d_model]``.

    With ``num_directions`` > 1 the same projected ``x`` is scanned in several orders, each with its own
    selective-SSM parameters (own conv, Delta, B, C, A, D; shared in/out projections and gate, as in Vision Mamba), and
    the results, mapped back to the original order, are summed before the gate. A single causal scan only lets a
    token see its predecessors; scanning both ways gives every token context from the whole sequence.

    Args:
      d_model: width of the input and output.
      d_state: N, state size per channel.
      expand: inner width ``E = expand * d_model``.
      d_conv: width of the causal depthwise conv.
      dt_rank: rank of the Delta projection (default ``ceil(E / 32)``).
      num_directions: number of scan orders (parameter sets of the :class:`SelectiveSSM`).
      scan_method: how the recurrence is evaluated (:data:`SCAN_METHODS`); no parameters depend on it, so a model
        trained with one method can be run with the other.
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | None = None,
        num_directions: int = 1,
        scan_method: str = "associative",
        rngs: nnx.Rngs,
    ):
        if num_directions < 1:
            raise ValueError(f"num_directions must be >= 1, got {num_directions}")
        d_inner = expand * d_model
        self.d_inner = d_inner
        self.in_proj = nnx.Linear(d_model, 2 * d_inner, use_bias=False, rngs=rngs)
        self.num_directions = num_directions
        self.ssm = SelectiveSSM(
            d_inner,
            d_state=d_state,
            d_conv=d_conv,
            dt_rank=dt_rank,
            num_directions=num_directions,
            scan_method=scan_method,
            rngs=rngs,
        )
        self.out_proj = nnx.Linear(d_inner, d_model, use_bias=False, rngs=rngs)

    def __call__(self, x: jax.Array, orders: Sequence[Order] | None = None) -> jax.Array:
        """``x [B, L, d_model]`` -> ``[B, L, d_model]``.

        ``orders``: one ``(to_sequence, from_sequence)`` pair per direction; default: forward, then reversed,
        which needs ``num_directions`` <= 2.
        """
        if orders is None:
            if self.num_directions > 2:
                raise ValueError("more than 2 directions need explicit scan orders")
            orders = [(_identity, _identity), (_flip, _flip)][: self.num_directions]
        if len(orders) != self.num_directions:
            raise ValueError(f"got {len(orders)} scan orders for {self.num_directions} directions")
        u, z = jnp.split(self.in_proj(x), 2, axis=-1)
        ys = self.ssm(jnp.stack([forward(u) for forward, _ in orders]))  # [K, B, L, E]
        y = sum(inverse(ys[k]) for k, (_, inverse) in enumerate(orders))
        return self.out_proj(y * nnx.silu(z))


def image_scan_order(name: str, height: int, width: int) -> Order:
    """The scan order ``name`` (one of :data:`SCANS`) of a ``height`` x ``width`` map flattened row-major.

    ``raster``: rows top to bottom, each left to right (the row-major flattening itself); ``raster_reverse``: the
    same backwards; ``column``: columns left to right, each top to bottom; ``column_reverse``: that backwards.
    The maps act on ``[B, H * W, E]``.
    """

    def to_columns(x: jax.Array) -> jax.Array:
        b, _, e = x.shape
        return jnp.swapaxes(x.reshape(b, height, width, e), 1, 2).reshape(b, height * width, e)

    def from_columns(x: jax.Array) -> jax.Array:
        b, _, e = x.shape
        return jnp.swapaxes(x.reshape(b, width, height, e), 1, 2).reshape(b, height * width, e)

    orders: dict[str, Order] = {
        "raster": (_identity, _identity),
        "raster_reverse": (_flip, _flip),
        "column": (to_columns, from_columns),
        "column_reverse": (lambda x: _flip(to_columns(x)), lambda x: from_columns(_flip(x))),
    }
    if name not in orders:
        raise ValueError(f"unknown scan order {name!r}; choose from {SCANS}")
    return orders[name]


class ResMambaBlock(nnx.Module):
    """Residual Mamba block on an image: ``x + Mamba(LayerNorm(x))`` over the ``H * W`` pixels as a sequence.

    ``[B, H, W, C] -> [B, H, W, C]``. The map is flattened row-major (raster order) to ``[B, H * W, C]`` and scanned
    in each order of ``scans`` (:data:`SCANS`) by its own selective SSM; the default ``("raster", "raster_reverse")``
    is bidirectional, so each pixel gets context from the whole image (a single causal raster scan would only see
    the rows above and the pixels to its left). Adding ``"column"`` / ``"column_reverse"`` (VMamba's cross scan)
    makes vertical neighbours adjacent in one of the sequences, at 2x the scan cost. Any ``H``, ``W``.
    ``scan_method`` as in :class:`Mamba`.
    """

    def __init__(
        self,
        dim: int,
        *,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | None = None,
        scans: Sequence[str] = ("raster", "raster_reverse"),
        scan_method: str = "associative",
        rngs: nnx.Rngs,
    ):
        scans = tuple(scans)
        for name in scans:
            if name not in SCANS:
                raise ValueError(f"unknown scan order {name!r}; choose from {SCANS}")
        if not scans:
            raise ValueError("ResMambaBlock needs at least one scan order")
        self.scans = scans
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.mamba = Mamba(
            dim,
            d_state=d_state,
            expand=expand,
            d_conv=d_conv,
            dt_rank=dt_rank,
            num_directions=len(scans),
            scan_method=scan_method,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        orders = [image_scan_order(name, h, w) for name in self.scans]
        y = self.mamba(self.norm(x).reshape(b, h * w, c), orders)
        return x + y.reshape(b, h, w, c)
