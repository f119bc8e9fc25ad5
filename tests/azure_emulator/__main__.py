"""Run the emulator by hand: `python -m tests.azure_emulator --port 8443 --plain-port 8080`.

Prints the environment to export (before starting Django / Celery) and the WorkspaceSpec values.
Control it with e.g. `curl -X POST http://127.0.0.1:8080/_emulator/quota -d '{}'`.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .emulator import AzureEmulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TLS port (ARM, AAD, data plane)")
    parser.add_argument(
        "--plain-port", type=int, default=0, help="plain port (metadata, proxy, scoring, control)"
    )
    parser.add_argument("--cluster-seconds", type=float, default=20.0)
    parser.add_argument("--service-seconds", type=float, default=15.0)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="certificates and SDK config (default: temp)"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    emu = AzureEmulator(
        port=args.port,
        plain_port=args.plain_port,
        cluster_create_seconds=args.cluster_seconds,
        service_deploy_seconds=args.service_seconds,
        workdir=args.workdir,
    ).start()
    for key, value in emu.env().items():
        print(f"export {key}='{value}'")
    print(f"# tenant_id={emu.tenant_id} client_id={emu.client_id} client_secret={emu.client_secret}")
    print(
        f"# subscription_id={emu.subscription_id} resource_group={emu.resource_group} "
        f"workspace_name={emu.workspace_name}",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emu.stop()


if __name__ == "__main__":
    main()
