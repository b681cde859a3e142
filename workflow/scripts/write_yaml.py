"""Write `snakemake.params.cfg` (a JSON string) as YAML to `snakemake.output[0]`, atomically."""

import json
import os

import yaml

tmp = snakemake.output[0] + ".tmp"  # noqa: F821 (injected by snakemake)
with open(tmp, "w") as f:
    yaml.safe_dump(json.loads(snakemake.params.cfg), f, sort_keys=True)  # noqa: F821
os.replace(tmp, snakemake.output[0])  # noqa: F821
with open(snakemake.log[0], "w") as f:  # noqa: F821
    f.write(f"wrote {snakemake.output[0]}\n")  # noqa: F821
