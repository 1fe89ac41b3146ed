"""Page objects of the admin portal: one module per page, holding that page's selectors, so
adapting to the real portal touches one file per page. `session.PortalSession` drives them."""
