"""Running commands in the background: the handle, its output, process trees and signals."""
