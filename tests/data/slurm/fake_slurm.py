"""Stand-in SLURM executables for tests/test_slurm.py (installed under several names on PATH).

Every call is appended to ``$FAKE_SLURM_DIR/calls.jsonl`` as ``{"cmd", "argv", "env", "stdin"}``.
``sbatch`` runs the job script at once (the job "completes" before sbatch returns) with SLURM_JOB_ID
and SLURM_GPUS set, records its exit status and prints the job id; ``sacct``/``squeue`` report every
recorded job as COMPLETED or FAILED; ``srun`` drops its options and runs the rest; ``torchrun``
records its arguments and writes placeholder outputs into the ``--out`` folder of ``meru train``;
``scontrol``/``sinfo``/``sacctmgr``/``sshare`` answer the plugin's configuration queries.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_SLURM_DIR"])


def record(cmd, argv, stdin=None, **extra):
    env = {k: v for k, v in os.environ.items() if k.startswith("SLURM_")}
    with open(STATE / "calls.jsonl", "a") as f:
        f.write(json.dumps({"cmd": cmd, "argv": argv, "env": env, "stdin": stdin, **extra}) + "\n")


def jobs():
    p = STATE / "jobs.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def sbatch(argv):
    script = None
    if "--wrap" in argv:
        script = argv[argv.index("--wrap") + 1]
    else:
        wraps = [a for a in argv if a.startswith("--wrap=")]
        script = wraps[0][len("--wrap=") :] if wraps else sys.stdin.read()
    state = jobs()
    job_id = str(1000 + len(state))
    record("sbatch", argv, script, job_id=job_id)
    env = dict(os.environ, SLURM_JOB_ID=job_id)
    gpus = [a.split("=", 1)[1] for a in argv if a.startswith("--gpus=")]
    if gpus:
        env["SLURM_GPUS"] = gpus[0]
    workdir = argv[argv.index("-D") + 1] if "-D" in argv else None
    out = argv[argv.index("--output") + 1] if "--output" in argv else os.devnull
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as log:
        rc = subprocess.run(
            ["sh", "-c", script], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode
    state[job_id] = "COMPLETED" if rc == 0 else "FAILED"
    (STATE / "jobs.json").write_text(json.dumps(state))
    print(job_id)
    return 0


def main():
    cmd, argv = Path(sys.argv[0]).name.removesuffix(".py"), sys.argv[1:]
    if cmd == "sbatch":
        return sbatch(argv)
    record(cmd, argv)
    if cmd in ("sacct", "squeue"):
        if any("Account" in a for a in argv):
            print("proj1")
            return 0
        for job_id, status in jobs().items():
            print(f"{job_id}|{status}")
        return 0
    if cmd == "scontrol":
        print("MinJobAge               = 300 sec")
        return 0
    if cmd == "sinfo":
        print("PARTITION\ncpu*\ngpu")
        return 0
    if cmd in ("sacctmgr", "sshare"):
        print("proj1")
        return 0
    if cmd == "srun":
        rest = list(argv)
        while rest and rest[0].startswith("-"):
            rest.pop(0)
        os.execvp(rest[0], rest)
    if cmd == "torchrun":
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.pt").write_text("placeholder written by the fake torchrun\n")
        (out / "log.jsonl").write_text("{}\n")
        return 0
    print(f"fake_slurm: unknown command {cmd}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
