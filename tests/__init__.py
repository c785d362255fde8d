"""The Fieldwatch test suite (a package, so that its helpers import under one name: tests.harness)."""
