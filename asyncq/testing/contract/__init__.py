"""The contract suite: one module per concern, each semantic stated once. Collected through
:class:`asyncq.testing.ContractSuite`, never on its own: the tests take their backend from
the suite."""
