"""Per-dataset method settings (``conf/method/per_dataset/<method>_<dataset>.yaml``) found through a fallback chain.

``distill.yaml`` and ``pipeline.yaml`` apply ``optional method/per_dataset@method: ${method}_${dataset}``: the settings
of the chosen method on the chosen dataset, looked up by name. A method that has no file of its own for a dataset takes
the file of the method ``conf/method/per_dataset/_fallback.yaml`` names for it (``fadrm_drc: fadrm``), followed further
while that one has no file either. :func:`register_fallbacks` puts each such link into Hydra's ConfigStore as a config
of the same group whose defaults list is the base file, so Hydra composes it like a file — ``--cfg job`` shows the
result, a command-line ``method.…`` override still wins — and no alias file has to exist on disk.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from reta.errors import RetaError

GROUP = "method/per_dataset"
CONF = Path(__file__).resolve().parents[1] / "conf"  # the package's Hydra config tree
_REGISTERED: set[str] = set()


def _stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.iterdir() if p.suffix == ".yaml" and not p.name.startswith("_")}


def fallback_links() -> dict[str, str]:
    """For every ``<method>_<dataset>`` that has no file but a base with one: the name of the file it resolves to."""
    conf = CONF
    folder = conf / "method" / "per_dataset"
    chain = OmegaConf.to_container(OmegaConf.load(folder / "_fallback.yaml")) or {}
    methods = _stems(conf / "method")
    bad = sorted(f"{k}: {v}" for k, v in chain.items() if k not in methods or v not in methods)
    if bad:
        raise RetaError(f"conf/method/per_dataset/_fallback.yaml names unknown methods ({', '.join(bad)}); "
                        f"valid: {', '.join(sorted(methods))}")
    own, datasets = _stems(folder), _stems(conf / "dataset")
    links = {}
    for method in chain:
        for dataset in datasets:
            name, base, seen = f"{method}_{dataset}", method, {method}
            if name in own:
                continue
            while f"{base}_{dataset}" not in own and base in chain:
                base = chain[base]
                if base in seen:
                    raise RetaError(f"conf/method/per_dataset/_fallback.yaml: a cycle through {base}")
                seen.add(base)
            if f"{base}_{dataset}" in own:
                links[name] = f"{base}_{dataset}"
    return links


def register_fallbacks() -> None:
    """Register every fallback link (:func:`fallback_links`) in Hydra's ConfigStore; repeated calls add nothing."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, target in fallback_links().items():
        if name not in _REGISTERED:
            store.store(group=GROUP, name=name, node={"defaults": [target, "_self_"]})
            _REGISTERED.add(name)
