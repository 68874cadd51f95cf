// Package config loads fedsender's settings: built-in defaults, then a YAML
// file, then FEDSENDER_* environment variables, and finally Validate.
//
// Every setting has one YAML path (for example backoff.min_interval) and one
// environment variable derived from it (FEDSENDER_BACKOFF_MIN_INTERVAL). Both
// are derived from the yaml tags of Config, so adding a field to Config is
// all it takes to make it configurable from a file and from the environment.
//
// Unknown keys, in the file at any depth or as FEDSENDER_* variables, are
// errors rather than silently ignored, because a misspelt security setting
// (an IP range denylist, a TLS option) must not fall back to a default
// unnoticed. Every error names the setting by its YAML path.
package config
