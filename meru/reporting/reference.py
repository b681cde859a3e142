"""`meru reference refresh --from results --to results/reference/default`: replace the committed reference run
(the logic lives in :mod:`meru.reporting.reproduction`)."""

from meru.arguments import add_reference_arguments as add_arguments  # noqa: F401
from meru.reporting.reproduction import run_reference as run  # noqa: F401
