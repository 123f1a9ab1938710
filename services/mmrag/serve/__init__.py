"""Ray Serve deployments (one module each) and the application builder (:mod:`mmrag.serve.app`)."""
