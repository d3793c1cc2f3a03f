"""The Dash workbench: `create_app(api_url)` in `app.ui.app`; one module per page in `pages/`."""
