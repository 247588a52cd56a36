"""``durable synth``, ``deploy`` and ``destroy``: the Lambda bundle and the stack on AWS."""
