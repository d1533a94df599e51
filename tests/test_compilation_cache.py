"""`jaxrec serve`'s persistent compilation cache: reloads read compiled models from it."""

import os
import subprocess
import sys

from jaxrec import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_enabled_cache_receives_every_compiled_program(tmp_path):
  cache = tmp_path / "xla"
  # A process of its own: the test process's JAX already has the suite's cache configured.
  code = ("from jaxrec.serve import compilation_cache as c; import sys; c.enable(sys.argv[1]); "
          "import jax, jax.numpy as jnp; jax.jit(lambda x: x * 2 + 1)(jnp.ones(3)).block_until_ready()")
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  subprocess.run([sys.executable, "-c", code, str(cache)], check=True, cwd=ROOT, env=env)
  # A program that compiles in milliseconds is cached too (JAX's default skips under 1 s).
  assert any(name.startswith("jit_") for name in os.listdir(cache))


def test_unusable_cache_directory_is_a_user_error(tmp_path, capsys):
  blocker = tmp_path / "a-file"
  blocker.write_text("not a directory")
  code = cli.main(["serve", "--export", str(tmp_path), "--compilation-cache",
                   str(blocker / "xla")])
  assert code == 2
  err = capsys.readouterr().err
  assert "cannot create the compilation cache" in err and "--compilation-cache ''" in err
