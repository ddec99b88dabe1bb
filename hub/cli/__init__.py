"""The ``hub`` command. Errors print one line on stderr and exit non-zero, never a traceback."""

from __future__ import annotations

import logging
import os
import sys

import typer
from pydantic import ValidationError

from hub.cli import (
    convert,
    db,
    hl7,
    import_,
    keys,
    mappings,
    mllp,
    mqtt,
    registry,
    rules,
    serve,
    simulate,
    sync,
)
from hub.errors import HubError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="IoMT → FHIR integration hub", pretty_exceptions_enable=False)
app.add_typer(db.app, name="db")
app.add_typer(keys.app, name="keys")
app.add_typer(mappings.app, name="mappings")
app.add_typer(hl7.app, name="hl7")
app.command("mllp")(mllp.mllp)
app.command("mqtt")(mqtt.mqtt)
app.add_typer(rules.app, name="rules")
app.add_typer(registry.app, name="registry")
app.add_typer(simulate.app, name="simulate")
app.command("serve")(serve.serve)
app.command("worker")(serve.worker)
app.command("convert")(convert.convert)
app.command("import")(import_.import_files)
app.add_typer(sync.destinations_app, name="destinations")
app.add_typer(sync.dlq_app, name="dlq")
app.command("sync")(sync.sync)
app.command("replay")(sync.replay)
keys.app.command("jwk")(sync.keys_jwk)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        app()
    except HubError as exc:
        typer.echo(f"hub: {exc.message}", err=True)
        sys.exit(2)
    except ValidationError as exc:  # settings from the environment
        first = exc.errors()[0]
        typer.echo(f"hub: invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}",
                   err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("HUB_DEBUG"):
            raise
        typer.echo(f"hub: internal error ({type(exc).__name__}); rerun with HUB_DEBUG=1 for "
                   "the traceback", err=True)
        sys.exit(3)
