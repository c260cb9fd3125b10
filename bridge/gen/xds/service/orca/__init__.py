"""Generated code: do not edit; run scripts/gen-proto."""
