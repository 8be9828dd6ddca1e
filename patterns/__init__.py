"""podpatterns: the sidecar, adapter and ambassador pod patterns as small Python services."""
