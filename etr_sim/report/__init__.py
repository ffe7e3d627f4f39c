"""Tables, plots (matplotlib imported only here), trace export and the report writer."""
