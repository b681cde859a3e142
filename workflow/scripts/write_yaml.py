"""Write `snakemake.params.cfg` (a JSON string) as YAML to `snakemake.output[0]`, atomically (meru.io)."""

import json

import yaml

from meru.io import write_text

out = snakemake.output[0]  # noqa: F821 (injected by snakemake)
write_text(out, yaml.safe_dump(json.loads(snakemake.params.cfg), sort_keys=True))  # noqa: F821
write_text(snakemake.log[0], f"wrote {out}\n")  # noqa: F821
