"""Studies: a TOML file of settings, axes and seeds; every run trained, evaluated and reported."""
