"""Data files shipped with ckptlint (known out-of-tree classes)."""
