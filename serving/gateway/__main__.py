"""`python -m serving.gateway`: run the gateway (Riva gRPC + OpenAI HTTP) in front of a Triton server.

Every GatewayConfig field is a flag (`--canary-share 0.1`) and an environment variable (`GATEWAY_CANARY_SHARE`),
so the Kubernetes Deployment sets them from a ConfigMap; `--rollout FILE` reads versions and share from the file
`registry.rollout` writes. API keys: `--api-keys-file` (a mounted Secret) and/or GATEWAY_API_KEYS.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal

from serving.gateway.core import GatewayConfig, load_api_keys


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m serving.gateway", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
    ap.add_argument("--grpc-port", type=int, default=int(os.environ.get("GATEWAY_GRPC_PORT", "50051")))
    ap.add_argument("--http-port", type=int, default=int(os.environ.get("GATEWAY_HTTP_PORT", "9000")))
    ap.add_argument(
        "--rollout",
        default=os.environ.get("GATEWAY_ROLLOUT", ""),
        help="rollout JSON written by `python -m registry rollout` (versions + canary share)",
    )
    for f in dataclasses.fields(GatewayConfig):
        env = os.environ.get(f"GATEWAY_{f.name.upper()}")
        flag = "--" + f.name.replace("_", "-")
        if f.name == "languages":
            ap.add_argument(
                flag,
                default=env.split(",") if env else None,
                type=lambda s: s.split(","),
                help="comma-separated locales of the model (lets 'en' mean 'en-US')",
            )
        elif f.name == "seed":
            ap.add_argument(flag, type=int, default=int(env) if env else None)
        else:
            ap.add_argument(flag, type=type(f.default), default=type(f.default)(env) if env else None)
    return ap


def config_from_args(a: argparse.Namespace) -> GatewayConfig:
    kw = {
        f.name: getattr(a, f.name)
        for f in dataclasses.fields(GatewayConfig)
        if getattr(a, f.name) is not None
    }
    if "languages" in kw:
        kw["languages"] = tuple(x for x in kw["languages"] if x)
    if a.rollout:
        rollout = {
            k: kw.pop(k) for k in ("champion_version", "challenger_version", "canary_share") if k in kw
        }
        cfg = GatewayConfig.from_rollout(a.rollout, **kw)
        return dataclasses.replace(cfg, **rollout) if rollout else cfg
    return GatewayConfig(**kw)


def main(argv: list[str] | None = None) -> int:
    from serving.gateway.app import Gateway, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = _parser().parse_args(argv)
    cfg = config_from_args(a)
    keys = load_api_keys(cfg.api_keys_file or None, os.environ.get("GATEWAY_API_KEYS"))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(Gateway(cfg, keys), a.host, a.grpc_port, a.http_port, stop=stop, rollout_file=a.rollout)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
