"""The model catalogue service: paging (`paging`), conversion (`convert`), validation (`validation`) and the
servicer (`service`)."""
