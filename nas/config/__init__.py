"""Reading and checking options: YAML config files, flags, counts, and masking secrets."""
from nas.config.errors import ConfigError
from nas.config.files import (
           MAX_SEED,
           SEED_EXPECTED,
           SUPERNET_FILES_EXPECTED,
           SUPERNET_VAL_IMAGES_EXPECTED,
           check_supernet_val_images,
           check_types,
           config_fields,
           is_number,
           is_seed,
           is_whole,
           make_config,
           parse_count,
           public_dict,
           read_config_file,
           supernet_files,
)
from nas.config.provenance import git_commit, provenance
from nas.config.registry import Choices, Registry, choices_help
from nas.config.secrets import check_url, mask_url

__all__ = ["MAX_SEED", "SEED_EXPECTED", "is_seed", "is_number", "is_whole",
           "ConfigError", "config_fields", "make_config", "parse_count",
           "public_dict", "read_config_file", "mask_url", "check_url", "check_types", "Choices", "Registry",
           "choices_help", "git_commit", "provenance", "SUPERNET_FILES_EXPECTED", "supernet_files",
           "SUPERNET_VAL_IMAGES_EXPECTED", "check_supernet_val_images"]
