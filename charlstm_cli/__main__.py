"""Run the command line with `python -m charlstm_cli`."""

from .launch import main

if __name__ == "__main__":
    main()
