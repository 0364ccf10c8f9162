"""`python -m phicpp ...` runs the phicpp command line."""
from .cli import main

if __name__ == "__main__":
    main()
