"""Pure answer logic: answer extraction, fusion (vote, select) and the recipe model.

Nothing here does I/O or imports another layer of the package."""
