"""``python -m l1inf_lightning``: the same as the ``l1inf-lightning`` command."""

from l1inf_lightning.commands import main

if __name__ == "__main__":
    main()
