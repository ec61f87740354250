"""Reading and checking options: YAML config files, flags, counts, and masking secrets."""
from nas.config.files import ConfigError, config_fields, make_config, parse_count, public_dict, read_config_file
from nas.config.secrets import mask_url

__all__ = ["ConfigError", "config_fields", "make_config", "parse_count", "public_dict", "read_config_file", "mask_url"]
