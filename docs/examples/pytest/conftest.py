pytest_plugins = ["kakashi.testing"]
