"""The reference implementation's data: its final configurations at full precision (`configs`) and the paper's
facts derived from them (`facts`: table cells, numbers, labels, which methods have a CNN). Pure data that imports
nothing else of tp_keras, at the bottom of the layers, so that every layer may read it (the paper's MNIST
configurations are the library's defaults)."""
