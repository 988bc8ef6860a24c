"""The back half: read an int8 .tflite and turn it into C (grows with the compiler issue)."""
