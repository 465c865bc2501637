"""Turn a pretrained weights file that needs pickle into a tensors-only copy that vlm4st can read.

vlm4st reads weight files only with ``torch.load(weights_only=True)``, and no config can change that: a config
travels between people, and a file that needs full unpickling can run any code while it loads. A file you
trust (you made it, or you checked where it comes from) is converted once, by a command you run yourself:

    python -m vlm4st.backbones.convert --trust-pickle ALBEF.pth ALBEF.tensors.pth

The copy holds ``{"model": state_dict}`` with the same keys, so ``model.vlm.pretrained_path`` takes it as is.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from vlm4st.backbones.albef import PATH_KEY, state_dict_of, weights_file
from vlm4st.checks import one_line
from vlm4st.errors import CheckpointError, exit_on_user_error

log = logging.getLogger(__name__)


def convert(source: str | Path, target: str | Path) -> int:
    """Unpickle ``source`` in full (trusted by the caller), write its state dict's tensors to ``target``; returns
    the number of tensors. The written file loads with ``weights_only=True``."""
    path = weights_file(source, PATH_KEY)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # the file is the only input: whatever the unpickler trips on is damage in it
        raise CheckpointError(f"'{path}': cannot read it as a torch checkpoint: {one_line(err)}") from err
    sd = {k: v.detach().clone().contiguous() for k, v in state_dict_of(obj, path, PATH_KEY).items()}
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sd}, target)
    return len(sd)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--trust-pickle SOURCE TARGET``; the flag is required, so that trusting a file is said."""
    parser = argparse.ArgumentParser(prog="python -m vlm4st.backbones.convert", description=__doc__.split("\n")[0])
    parser.add_argument("--trust-pickle", action="store_true", required=True,
                        help="load SOURCE with full unpickling: it can run code, so only for a file you trust")
    parser.add_argument("source", help="the weights file that needs pickle (e.g. ALBEF.pth)")
    parser.add_argument("target", help="where the tensors-only copy goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        n = convert(args.source, args.target)
    except CheckpointError as err:
        exit_on_user_error(err)
    log.info("%d tensors from %s written to %s (loads with weights_only=True)", n, args.source, args.target)


if __name__ == "__main__":
    main()
