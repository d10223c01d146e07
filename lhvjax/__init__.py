"""lhvjax: velocity fields for local hidden-variable dynamics, searched with JAX."""
