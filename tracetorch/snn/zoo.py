"""The 32 public layer classes, one line each, all from :func:`make_layer_class`.

The names are written out so that editors and type checkers see the classes; :data:`LAYERS`
takes its names from the grammar (:func:`tracetorch.snn.grammar.layer_names`).
"""

from tracetorch.snn.grammar import layer_names
from tracetorch.snn.layer import NeuronLayer, make_layer_class

LI = make_layer_class("LI")
DLI = make_layer_class("DLI")
SLI = make_layer_class("SLI")
DSLI = make_layer_class("DSLI")
LIEMA = make_layer_class("LIEMA")
DLIEMA = make_layer_class("DLIEMA")
SLIEMA = make_layer_class("SLIEMA")
DSLIEMA = make_layer_class("DSLIEMA")
LIB = make_layer_class("LIB")
DLIB = make_layer_class("DLIB")
SLIB = make_layer_class("SLIB")
RLIB = make_layer_class("RLIB")
DSLIB = make_layer_class("DSLIB")
DRLIB = make_layer_class("DRLIB")
SRLIB = make_layer_class("SRLIB")
DSRLIB = make_layer_class("DSRLIB")
LIT = make_layer_class("LIT")
DLIT = make_layer_class("DLIT")
SLIT = make_layer_class("SLIT")
RLIT = make_layer_class("RLIT")
DSLIT = make_layer_class("DSLIT")
DRLIT = make_layer_class("DRLIT")
SRLIT = make_layer_class("SRLIT")
DSRLIT = make_layer_class("DSRLIT")
LITS = make_layer_class("LITS")
DLITS = make_layer_class("DLITS")
SLITS = make_layer_class("SLITS")
RLITS = make_layer_class("RLITS")
DSLITS = make_layer_class("DSLITS")
DRLITS = make_layer_class("DRLITS")
SRLITS = make_layer_class("SRLITS")
DSRLITS = make_layer_class("DSRLITS")

LAYERS: dict[str, type[NeuronLayer]] = {name: globals()[name] for name in layer_names()}
"""The 32 classes by name, in the grammar's order (a name the lines above miss is a ``KeyError`` at import)."""
