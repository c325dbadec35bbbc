"""absl flag definitions (import as `import flags as ns_flags`; never shadow absl.flags)."""

from flags.main_flags import define_main_flags

__all__ = ["define_main_flags"]
