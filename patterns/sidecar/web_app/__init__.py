"""The sidecar pattern's demo app: a small Flask app whose access log is a rotating FILE.

The log-shipper sidecar follows that file from a shared volume and forwards every line to
the log-collector; a sequence number on each line lets the demo and the tests prove that
nothing was lost or duplicated across rotations and shipper restarts.
"""
