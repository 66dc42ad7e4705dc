"""The experiment configs (`get_config(arg)` each); see `asl_vq.config_lib`."""
