"""Canonical hashes of a memcurv maps file, for refactors that must keep every number: every variable's and coordinate's bytes and
attributes, without the creation time and the wall-clock timings. Usage: python tests/hash_maps.py FILE [RENAMES.json]"""
import hashlib, json, sys
import numpy as np
import xarray as xr

TIMING = ("created", "seconds")

def canon_attrs(attrs):
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in sorted(attrs.items()) if not k.startswith(TIMING)}

def var_hash(v):
    h = hashlib.sha256()
    vals = v.values
    if vals.dtype == object: h.update(json.dumps([str(x) for x in vals.ravel()]).encode())
    else: h.update(np.ascontiguousarray(vals).tobytes()); h.update(str(vals.dtype).encode())
    h.update(json.dumps([list(v.dims), list(v.shape)]).encode())
    h.update(json.dumps(canon_attrs(v.attrs), default=str, sort_keys=True).encode())
    return h.hexdigest()[:16]

def hashes(path, renames=None):
    ds = xr.open_dataset(path, engine="h5netcdf") if str(path).endswith(".nc") else xr.open_zarr(path)
    renames = renames or {}
    out = {}
    for k in sorted(ds.variables):
        out[renames.get(k, k)] = var_hash(ds[k])
    out["__attrs__"] = hashlib.sha256(json.dumps(canon_attrs(ds.attrs), default=str, sort_keys=True).encode()).hexdigest()[:16]
    return dict(sorted(out.items()))

if __name__ == "__main__":
    renames = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else None
    h = hashes(sys.argv[1], renames)
    total = hashlib.sha256(json.dumps(h, sort_keys=True).encode()).hexdigest()[:16]
    print(json.dumps(h, indent=1)); print("TOTAL", total)
