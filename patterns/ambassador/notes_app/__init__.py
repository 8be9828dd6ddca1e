"""The ambassador pattern's demo app: a small notes service. Its DATABASE_URL always
points at localhost:5432 -- the db-ambassador sidecar -- in every environment."""
