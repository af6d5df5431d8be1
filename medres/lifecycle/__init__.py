"""After training: held-out evaluation of registered models, promotion gates, @champion and rollback."""
