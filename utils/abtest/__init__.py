"""A/B testing (chapter 05): `router` is the router model itself (logged from code),
`experiment` logs it over two aliases and reads its request log, `report` compares the
variants."""
