"""Thin command modules: parse options, call one domain function, render."""
