"""Who may read what: API keys (:mod:`.keys`), the request's principal (:mod:`.context`) and the authenticator
the gateway asks once per request (:mod:`.guard`). The store enforces the principal's collections on every read
(:class:`mmrag.store.scoped.ScopedStore`)."""
