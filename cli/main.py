"""The ``imagine`` command: one entry point, one subcommand per job a person runs by hand.

    imagine parse "PROMPT" [--json]        the normalized request(s), or the error (exit 2)
    imagine run "PROMPT" [--model M] [--out DIR]   prompt -> queue -> worker -> images on disk
    imagine worker --models M[,M] --queues fast,relax   a GPU (or CPU) worker
    imagine queue [--watch | --repair]      queues, running jobs, workers, failures; repair stuck jobs (admins)
    imagine schema                         the JSON schema of the job contract
    imagine shorten "PROMPT" [--model M] [--json]   which words matter (to model M's generator), shorter prompts
    imagine embed "TEXT" [--encoder minilm|clip] [--pooling cls|mean|max|eos] [--json]   a text's vector
    imagine bot [--sync-global]            the Discord bot (DISCORD_TOKEN, REDIS_URL)

Worker code (torch) is imported only by ``run``, ``worker``, ``shorten`` and ``embed``; the bot
(discord.py) only by ``bot``.

Exit status: 0 done; 2 refused with one line on stderr saying what was wrong and what to do (a
bad prompt or parameter, Redis unreachable, a missing model or redis-server); 1 a job failed (its
reason printed) or a bug (a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from imagine.errors import ImagineError, InvalidParameter, UserError
from imagine.model_specs import model_names
from imagine.settings import get_settings

err_console = Console(stderr=True, soft_wrap=True)
"""Errors and notes: one line each, however wide the terminal (or none: a pipe, a log)."""


def request_json(request: Any) -> dict[str, Any]:
    """A request as `imagine parse --json` prints it: every parameter resolved."""
    data: dict[str, Any] = request.model_dump(mode="json")
    data["params"]["aspect"] = str(request.params.aspect)
    data["total_weight"] = request.total_weight
    data["positives"] = [p.model_dump() for p in request.positives]
    data["negatives"] = [p.model_dump() for p in request.negatives]
    return data


def print_error(exc: ImagineError) -> None:
    err_console.print(f"[bold red]{escape(exc.title)}[/]: {escape(exc.message)}", highlight=False)


def cmd_parse(args: argparse.Namespace) -> int:
    from imagine.prompt import parse

    try:
        requests = parse(args.prompt, models=model_names(get_settings().models_config))
    except UserError as exc:
        if args.json:
            print(json.dumps({"error": exc.to_dict()}, ensure_ascii=False))
        print_error(exc)
        return 2
    if args.json:
        print(json.dumps([request_json(r) for r in requests], indent=2, ensure_ascii=False))
    else:
        console = Console()
        for i, r in enumerate(requests, 1):
            console.print(f"[bold]{i}.[/] {r.text}", highlight=False)
            for p in r.parts:
                console.print(f"   {p.weight:+g}  {p.text}", highlight=False)
            params = {k: v for k, v in r.params.model_dump().items() if v not in (None, (), [])}
            params["aspect"] = str(r.params.aspect)
            console.print(f"   {params}", highlight=False)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from imagine.jobs import schema

    print(json.dumps(schema(), indent=2))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.worker import run

    settings = get_settings()
    models = _split(args.models) or [settings.default_model]
    run(models, _split(args.queues), settings, burst=args.burst)
    return 0


def cmd_bot(args: argparse.Namespace) -> int:
    from bot.app import main as run_bot
    from imagine.monitor import serve_metrics
    from imagine.queue import JobQueue

    logging.getLogger().setLevel(logging.INFO)  # a service: say what happens to each job
    settings = get_settings()
    if settings.metrics_port:  # Prometheus' thread reads the queue's gauges on a sync client
        serve_metrics(settings.metrics_port, JobQueue.from_settings(settings))
    return run_bot(settings, sync_global=args.sync_global)


def cmd_queue(args: argparse.Namespace) -> int:
    import time

    from rich.live import Live

    from imagine.monitor import overview, render
    from imagine.queue import JobQueue

    settings = get_settings()
    jq = JobQueue.from_settings(settings)
    if args.repair:
        return repair(jq, grace_s=settings.worker_ttl_s + settings.worker_heartbeat_s)
    if not args.watch:
        Console().print(render(overview(jq)))
        return 0
    with Live(render(overview(jq)), refresh_per_second=1, screen=False) as live:
        while True:
            time.sleep(args.interval)
            live.update(render(overview(jq)))


def repair(jq: Any, grace_s: float) -> int:
    """``imagine queue --repair``: one reconciler pass (``imagine.reconcile``) and a table of what it
    repaired; what is still within its grace is counted (a later pass, or a worker, repairs it)."""
    from rich.table import Table

    repaired, waiting = jq.reconcile(grace_s)
    table = Table("job", "user", "what was wrong", "repair", title=f"Repaired {len(repaired)} job(s)")
    for p in repaired:
        table.add_row(p.job_id, p.scope or "", p.seen, p.repair)
    console = Console()
    console.print(table)
    if waiting:
        console.print(f"{len(waiting)} more within their {grace_s:.0f} s grace "
                      "(in flight, or repaired by a later pass).")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cli.local_run import run_prompt

    return run_prompt(args.prompt, model=args.model, out=args.out, user=args.user)


def cmd_shorten(args: argparse.Namespace) -> int:
    from imagine.prompt import parse
    from worker.diagnostics import Diagnostician

    text = parse(args.prompt)[0].positive_text  # as /imagine reads it: parameters and --no removed
    if args.model:  # ranked by the generator's own conditioning and attention (a trained model)
        from imagine.settings import get_settings
        from worker.semantic import SemanticEncoder
        from worker.worker import load_models, load_rankers_for

        settings = get_settings()
        models = load_models([args.model], settings)
        ranker = load_rankers_for(settings, models)[args.model]
        diagnostician = Diagnostician(SemanticEncoder.load(), ranker, model=args.model)
        result = diagnostician.shorten(text, models[args.model])
    else:
        result = Diagnostician.text_only().shorten(text)
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    from rich.table import Table

    measure = "influence" if result.measure == "generator" else "1 - cos"
    table = Table("rank", "word", measure, "relative", "role", title=f"Word influence ({result.encoder})")
    for w in result.ranked:
        table.add_row(str(w.rank), w.word, f"{w.influence:.4f}", f"{w.relative:.2f}", w.role)
    console = Console()
    console.print(table)
    for i, p in enumerate(result.proposals, 1):
        console.print(f"{i}. {p.text}  [dim]({p.similarity:.0%} of the meaning)[/]", highlight=False)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    if args.encoder == "minilm":
        from worker.semantic import SemanticEncoder

        encoder = SemanticEncoder.load()
        vector, name = encoder.embed([args.text], args.pooling)[0], encoder.name
    else:
        from imagine.model_specs import load_model_specs
        from worker.diagnostics.text_vectors import load_clip_text_encoder, text_vector

        settings = get_settings()
        specs = load_model_specs(settings.models_config)
        model = args.model or settings.default_model
        if model not in specs:
            raise InvalidParameter(f"Unknown model `{model}` for --model; use one of {', '.join(sorted(specs))}.")
        clip = load_clip_text_encoder(specs[model], settings.model_cache_dir)
        vector, name = text_vector(clip, args.text, args.pooling), f"{model} {type(clip.model).__name__}"
    values = [round(v, 6) for v in vector.tolist()]
    norm = float(vector.norm())
    if args.json:
        print(json.dumps({"text": args.text, "encoder": name, "pooling": args.pooling, "dim": len(values),
                          "norm": norm, "vector": values}))
        return 0
    Console(stderr=True).print(f"{name}, {args.pooling} pooling: {len(values)} dimensions, norm {norm:.4f}")
    print(" ".join(f"{v:.6f}" for v in values))
    return 0


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagine", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens to each job")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("parse", help="parse a prompt as /imagine would")
    p.add_argument("prompt")
    p.add_argument("--json", action="store_true", help="print JSON (one object per job)")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("run", help="generate a prompt end to end and write the images")
    p.add_argument("prompt")
    p.add_argument("--model", default=None, help="model name (default: the deployment default)")
    p.add_argument("--out", default="out", help="directory for grid.png, the images, result.json")
    p.add_argument("--user", default="local", help="user id the job is submitted as")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="run a worker that serves some models")
    p.add_argument("--models", default=None, help="comma-separated model names")
    p.add_argument("--queues", default="fast,relax", help="speeds in priority order")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("bot", help="run the Discord bot")
    p.add_argument("--sync-global", action="store_true", help="sync the slash commands globally at start")
    p.set_defaults(func=cmd_bot)

    p = sub.add_parser("queue", help="the queue, running jobs, workers and failures (REDIS_URL)")
    p.add_argument("--watch", action="store_true", help="keep the view live")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes with --watch")
    p.add_argument("--repair", action="store_true", help="repair stuck jobs and slots now, and list what was repaired")
    p.set_defaults(func=cmd_queue)

    p = sub.add_parser("shorten", help="which words of a prompt matter, and shorter prompts (no images)")
    p.add_argument("prompt")
    p.add_argument("--model", help="rank by this model's own conditioning and cross-attention (e.g. shapes); "
                                   "without it, by MiniLM (model-independent)")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON")
    p.set_defaults(func=cmd_shorten)

    p = sub.add_parser("embed", help="print a text's vector from the MiniLM or the CLIP text encoder")
    p.add_argument("text")
    p.add_argument("--encoder", choices=["minilm", "clip"], default="minilm")
    p.add_argument("--pooling", choices=["cls", "mean", "max", "eos"], default="mean")
    p.add_argument("--model", default=None,
                   help="for --encoder clip: whose CLIP text encoder (default: the default model)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("schema", help="print the job contract's JSON schema")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:  # transformers' import-time notices (torchvision absent, ...) are noise here
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ImagineError as exc:
        print_error(exc)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `imagine parse ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
