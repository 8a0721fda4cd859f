"""`python -m edgemnv2 ...`, which is also how torchrun starts it: `torchrun --nproc-per-node 2 -m edgemnv2 validate ...`."""

from .cli.main import main

main()
