"""Maps the sibling folders converters/, quant/, runtime/ to edgeseq.converters, ... ."""
from setuptools import find_packages, setup

SIBLINGS = ("converters", "quant", "runtime")

packages = find_packages(include=["edgeseq", "edgeseq.*"])
package_dir = {"edgeseq": "edgeseq"}
for top in SIBLINGS:
    packages.append(f"edgeseq.{top}")
    package_dir[f"edgeseq.{top}"] = top
    packages += [f"edgeseq.{top}.{sub}" for sub in find_packages(where=top)]

setup(packages=packages, package_dir=package_dir)
