"""What several services share: the runtime (config, JSON logs, admin server, shutdown),
the file follower and the Fluentd Forward protocol."""
