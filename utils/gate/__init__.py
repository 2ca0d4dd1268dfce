"""The validation gate in front of the registry (chapter 08): `checks` measures a candidate
version, `promotion` moves aliases only when every check passed (and rolls back),
`webhooks` triggers the gate from registry events on a loopback receiver."""
