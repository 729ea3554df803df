"""turbjax: differentiable atmospheric-turbulence simulators, priors and models in JAX."""

__version__ = "0.1.0"
