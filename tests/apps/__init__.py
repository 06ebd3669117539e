"""Small asyncq apps the CLI tests load by ``module:attribute``, in-process or in a subprocess
(run with the tests directory as the working directory and on PYTHONPATH)."""
