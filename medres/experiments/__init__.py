"""Experiments that reproduce a result of the residual-network literature on medres, with their reports."""
